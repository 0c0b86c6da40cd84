"""Model management: manifests, the registry, mappings, the lifecycle saga, data companions."""

"""The one saga engine: long-running, multi-step work (deployments today; rollouts and evolution
pipelines next), each step persisted, retried, compensated and resumed after a crash."""

"""The API's request bodies, checked by pydantic at the edge, and the shapes of its responses:
one module per area, each response built from the domain's own records."""

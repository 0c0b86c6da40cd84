"""Loaded by schemathesis in `test_api_contract.py`: how to make a body of the media types the
API documents and schemathesis cannot serialize by itself."""

import schemathesis
from hypothesis import strategies as st

# A model package is a tar.gz; arbitrary bytes test the refusal of what is not one.
schemathesis.openapi.media_type("application/gzip", st.binary(max_size=2048))

"""One FastAPI router per API area."""

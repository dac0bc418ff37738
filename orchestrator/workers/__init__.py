"""One process per engine: the worker side (load, cap, serve calls) and the server side (`EngineClient`)."""

"""`python -m app serve`: load the engine, then run the API under uvicorn."""
from __future__ import annotations

import logging
from pathlib import Path

from app.service.settings import ServiceSettings

log = logging.getLogger("app.serve")


def load_service_engine(settings: ServiceSettings, *, engine: str = "auto"):
    """The inference engine the jobs run: the kit's own, as its container would choose it."""
    from algorithm.cli import click_encoding_for
    from algorithm.engine_choice import load_engine
    from algorithm.engine_contract import EngineOptions

    options = EngineOptions(device=settings.device, probabilities=False,
                            click_encoding=click_encoding_for(settings.challenge))  # 2026: scribbles as impulses
    return load_engine(model=settings.model, options=options, engine=engine)


def serve(settings: ServiceSettings, *, engine: str = "auto", log_level: str = "info") -> int:
    import uvicorn

    from app.service.api import create_app, keep_temporary_files_in_scratch

    settings.check()
    keep_temporary_files_in_scratch(settings)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings=settings, engine=load_service_engine(settings, engine=engine))
    log.info("data in %s; uploads up to %d bytes; %s", Path(settings.data_dir).resolve(), settings.max_upload_bytes,
             "organiser token set" if settings.token else "no organiser token (loopback only, unless participants exist)")
    # One process: the inference worker and the job database belong to it.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, workers=1,
                timeout_graceful_shutdown=5)
    return 0

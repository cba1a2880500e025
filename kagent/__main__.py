"""``python -m kagent``. Guarded: a worker process started with multiprocessing's spawn (the
workflow engine's expression workers) imports this module as ``__mp_main__`` and must not run
the command line again — it would start a second controller."""

if __name__ == "__main__":
    from kagent.cli.main import app

    app()

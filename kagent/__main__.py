from kagent.cli.main import app

app()

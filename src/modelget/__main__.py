from modelget.cli import run

run()

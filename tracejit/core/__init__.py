"""The ground every stage stands on: the IR (`ir`), symbolic shapes (`shapes`),
dtypes, pytrees, errors and configuration. Imports nothing else of tracejit."""

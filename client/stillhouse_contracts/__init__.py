"""The contracts of the REST API that the client and the server share: the job spec
(``stillhouse_contracts.spec``) and the report of a finished job (``.report``). Plain
pydantic, nothing else: the client installs them, and the server imports them from here."""

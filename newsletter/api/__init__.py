"""The staff REST API, `/api/v1`: everything the CLI does, over HTTP, for people with a
session and for systems with a token. Route handlers parse, check the caller's scope
and call the same service functions as the CLI; they hold no business logic."""

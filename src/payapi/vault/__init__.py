"""The vault: a secrets server speaking the CyberArk Conjur REST API.

In production the same client code (``client.VaultClient``, or the official
``conjur-api`` package) points at a real Conjur; in the lab and in tests it points here.

- ``app``        ``create_app(settings)``: the FastAPI app, its lifespan and error JSON
- ``routes``     the endpoints, thin
- ``service``    authorization, secrets, credentials, policy application (one connection)
- ``policy``     the policy YAML subset, parsed and resolved to full ids (pure)
- ``crypto``     data key, AES-256-GCM sealing, API key hashing
- ``tokens``     short-lived signed access tokens
- ``db``         migrations (``migrations/*.sql``) and the data-key check
- ``bootstrap``  create an account with its root policy and admin user
- ``testing``    run a real vault on a loopback port (tests, tools)
- ``client``     the async client the services and the CLI use
"""

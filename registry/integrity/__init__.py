"""Tamper evidence for the event log: a digest chain over the stored events, signed
checkpoints of it, and a verifier.

- ``chain``: the canonical bytes of a stored event and the chain link (pure);
- ``log``: the stored events, read raw in position order and in batches;
- ``signing``: Ed25519 keys and checkpoint signatures;
- ``authentication``: the event key and the authenticator each writer stores per event;
- ``ledger``: the chain and checkpoint tables, and ``extend_chain`` that maintains them;
- ``verify``: ``verify_ledger`` and ``check_checkpoint``;
- ``cli``: the ``registry verify`` command.
"""

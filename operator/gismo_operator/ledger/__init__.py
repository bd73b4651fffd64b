"""The durable region ledger (:mod:`.regions`: group commit, one conflict-retry rule) and its API calls
(:mod:`.sliceapi`), kept apart so the ledger is tested against a fake API that enforces resourceVersion."""

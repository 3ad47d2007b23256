"""livestate for Buildbot: a Buildbot MQ that carries the masters' messages
over PostgreSQL LISTEN/NOTIFY in livestate's wire format (docs/BUILDBOT.md)."""

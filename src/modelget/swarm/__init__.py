"""Swarm mode (``pull --swarm``): many nodes pull one model with about one copy's worth of
origin traffic, through aria2's own BitTorrent. ``torrent.py`` (the deterministic per-blob
torrent), ``policy.py`` (the pure decisions: role, stall fallback, seeding lifetime),
``node.py`` (the swarm's aria2c over JSON-RPC), ``engine.py`` (``SwarmEngine``: the engine a
swarm pull runs, which sends the big blobs through the swarm and the rest to the usual
engine). Heavy modules are imported where used."""

-- The RFC 9162 Merkle tree over the log (events/merkle.py, service/store/tree.py) and its signed
-- checkpoints (SPEC, "Verifiable history"). Leaf i is the i-th event in position order; positions a
-- rolled-back append drew and never used are kept as runs in log_gaps (one row per run, however many
-- positions it holds), so a leaf's index is its position minus 1 minus the positions skipped below it,
-- with no row per event. Perfect subtrees of 64 leaves and more are
-- stored; smaller ones are computed from the events' own hashes (at most 64 read per node).

CREATE TABLE merkle_subtrees (
    level smallint NOT NULL CHECK (level >= 6),
    index bigint   NOT NULL,
    hash  bytea    NOT NULL,
    PRIMARY KEY (level, index)
);

-- From leaf `leaf` on (until the next row), an event's position is its leaf index + 1 + skipped.
CREATE TABLE log_gaps (
    leaf    bigint PRIMARY KEY,
    skipped bigint NOT NULL CHECK (skipped > 0)
);

-- The writer's state, in the same transaction as its rows: a crash repeats nothing and skips nothing.
-- frontier: the roots of the perfect subtrees of the right edge, largest first (Frontier).
CREATE TABLE merkle_tree_state (
    only_row      boolean  PRIMARY KEY DEFAULT true CHECK (only_row),
    tree_size     bigint   NOT NULL,
    last_position bigint   NOT NULL,
    frontier      bytea[]  NOT NULL
);
INSERT INTO merkle_tree_state (tree_size, last_position, frontier) VALUES (0, 0, '{}');

-- Signed checkpoints (C2SP tlog-checkpoint), kept: an auditor may ask for any of them again.
CREATE TABLE checkpoints (
    tree_size bigint      PRIMARY KEY,
    root      bytea       NOT NULL,
    note      text        NOT NULL,
    made_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX checkpoints_made_at ON checkpoints (made_at);

-- Append-only for the service: the tree and checkpoints only grow; the state row only moves.
GRANT SELECT, INSERT ON merkle_subtrees, log_gaps, checkpoints TO keyledger_app;
GRANT SELECT, UPDATE ON merkle_tree_state TO keyledger_app;

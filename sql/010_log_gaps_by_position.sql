-- Where a run of skipped positions ends, indexed: the first position after the run is
-- leaf + 1 + skipped, which grows with leaf. A leaf's position and a position's leaf are then one
-- index lookup each (service/store/tree.py), not a read of every run.
CREATE INDEX log_gaps_first_position ON log_gaps ((leaf + 1 + skipped));

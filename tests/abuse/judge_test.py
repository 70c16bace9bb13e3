#!/usr/bin/env python3
"""Unit tests of h2_abuse.judge: how a phase's probe errors are judged.

No broker is started: each test hands judge() the result a phase run would
produce. held_messages may lose a share of its round trips to gRPC's memory
reclamation (the probe's "reclaim_errors"), but no other error.
"""
import os
import sys
import types
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h2_abuse  # noqa: E402

OPTS = types.SimpleNamespace(recover_s=30, rss_headroom_mib=512, max_probe_errors=0)
P99_BOUNDS = {"holds": 100.0, "degrades": 1000.0}


def held_messages(errors, reclaim_errors, ops=800, reclaim_fraction=0.02):
    """A passing held_messages result but for its probe's errors."""
    return {
        "phase": "held_messages", "expect": "holds", "alive": True, "exit_code": 0,
        "attack": {}, "must_recover": True,
        "recovery": {"ready": True, "errors": 0, "ops": 200},
        "rss_start_mib": 19.0, "rss_max_mib": 900.0, "hwm_mib": 900.0,
        "rss_ceiling_mib": 1536, "reclaim_fraction": reclaim_fraction,
        "probe": {"ops": ops, "errors": errors, "reclaim_errors": reclaim_errors,
                  "p99_ms": 5.0, "first_errors": ["UNAVAILABLE: GOAWAY received"]},
    }


class JudgeProbeErrorsTest(unittest.TestCase):
    def judge(self, res):
        return h2_abuse.judge(res, OPTS, P99_BOUNDS)

    def test_the_phase_allows_its_share_of_reclamation_errors(self):
        self.assertEqual(self.judge(held_messages(5, 5)), [])
        self.assertEqual(self.judge(held_messages(16, 16)), [])

    def test_more_reclamation_errors_than_the_share_fail(self):
        out = self.judge(held_messages(17, 17))
        self.assertEqual(len(out), 1)
        self.assertIn("17 of the probe's 800 round trips failed by memory reclamation", out[0])
        self.assertIn("at most 16 allowed", out[0])

    def test_any_other_error_fails_even_beside_reclamation_errors(self):
        out = self.judge(held_messages(6, 5))
        self.assertEqual(len(out), 1)
        self.assertIn("the probe saw 1 errors besides memory reclamation", out[0])

    def test_without_a_share_reclamation_errors_count_like_any_other(self):
        out = self.judge(held_messages(1, 1, reclaim_fraction=None))
        self.assertEqual(len(out), 1)
        self.assertIn("the probe saw 1 errors (at most 0 allowed)", out[0])

    def test_a_probe_that_printed_nothing_fails(self):
        out = self.judge(held_messages(-1, 0))
        self.assertEqual(len(out), 1)
        self.assertIn("the probe saw -1 errors", out[0])

    def test_the_phase_table_gives_held_messages_a_two_percent_share(self):
        phase = {p.name: p for p in h2_abuse.PHASES}["held_messages"]
        self.assertEqual(phase.reclaim_fraction, 0.02)
        self.assertTrue(all(p.reclaim_fraction is None
                            for p in h2_abuse.PHASES if p.name != "held_messages"))


if __name__ == "__main__":
    unittest.main()

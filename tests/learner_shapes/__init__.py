"""Servers and clients written the way the course's learners write them, one shape each.

Each shape is a common way a learner solves the course's week-5/6 task, accepted by the
course's graders; the conformance tests pin which checks each shape fails under each profile,
so the course profile keeps predicting the graders and the strict profile keeps naming what
PROTOCOL.md adds.
"""

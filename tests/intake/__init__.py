"""Tests of skillsvc.intake."""

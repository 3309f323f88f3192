"""Tests of skillsvc.validation: pure, no database, no server."""

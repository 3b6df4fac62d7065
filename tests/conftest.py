"""Test settings: hypothesis profiles (`convc`, sized for the 2-core machine and the default;
`thorough` via HYPOTHESIS_PROFILE=thorough for a long hunt); tests/ on sys.path for reference."""
import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("convc", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "convc"))

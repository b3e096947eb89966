"""Prefill and decode worker processes (one OS process each) and their scheduling logic."""

"""Measure generated images and models: a registry of metrics, results files with their protocol, reports."""

"""Experiments that drive many training runs: learning-rate sweeps (`pulse sweep`) and the quality suites
(`pulse benchmark`: LRA, bAbI). Above pulse.train; the speed benchmark (`pulse bench`) is pulse.bench."""

"""Development benchmarks of byola_hf against the original computation (not part of the installed package)."""

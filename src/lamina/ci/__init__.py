"""CI adapters: a CI system's environment → BuildOptions → build() → its outputs, summaries and annotations."""

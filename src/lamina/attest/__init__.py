"""Attestations attached to built images, the way BuildKit attaches them: SLSA provenance and an SPDX SBOM, each an
in-toto statement in an attestation manifest next to the image manifest in an index."""

"""Layer 3 — model outputs to label maps: ID / instance / semantic decoding, instance splitting,
components of the semantic answer, the refiner's pixel model and border-seeded instances."""

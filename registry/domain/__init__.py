"""The registry's pure domain model: no I/O, guard methods, explicit past-tense events."""

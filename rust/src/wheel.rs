//! Hierarchical timer wheel (filled in by the scheduler work).

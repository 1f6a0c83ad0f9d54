//! The turn engine (SPEC.md section 6.1). Being written.

//! Deterministic layers: sorted tar entries with fixed owner and mtimes,
//! compressed and hashed in one streaming pass.
// STUB: being written by the release/layer helper.

//! The registry client against real components: CNCF distribution
//! (`docker-registry`) with anonymous, Basic and Bearer-token auth, nginx
//! with a body-size cap, skopeo reading back what was pushed; and, for
//! faults a real registry cannot produce on cue, the in-process FAKE
//! `FaultyRegistry` (a lying registry) and `ForgejoRegistry`, a DOUBLE of
//! Forgejo 9.x's container registry with Cloudflare in front on cue.
//!
//! Missing tools (docker-registry, skopeo, nginx) fail the tests with a
//! message naming the package; CI installs them.
// Tests run tools directly; the secret-stripping wrapper is for the product.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

#[path = "registry/harness.rs"]
mod harness;

#[path = "support/faulty_registry.rs"]
mod faulty_registry;

#[path = "support/forgejo_registry.rs"]
mod forgejo_registry;

#[path = "registry/bench.rs"]
mod bench;
#[path = "registry/faults.rs"]
mod faults;
#[path = "registry/forgejo.rs"]
mod forgejo;
#[path = "registry/pull.rs"]
mod pull;
#[path = "registry/push.rs"]
mod push;

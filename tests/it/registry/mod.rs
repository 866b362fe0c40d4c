//! The registry client against real components: CNCF distribution
//! (`docker-registry`) with anonymous, Basic and Bearer-token auth, nginx
//! with a body-size cap, skopeo reading back what was pushed; and, for
//! faults a real registry cannot produce on cue, the in-process FAKE
//! `FaultyRegistry` (a lying registry) and `ForgejoRegistry`, a DOUBLE of
//! Forgejo 9.x's container registry with Cloudflare in front on cue.

mod bench;
mod faults;
mod forgejo;
mod pull;
mod push;

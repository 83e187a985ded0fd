//! Fjord's end-to-end test support: a real, local Kubernetes cluster built from upstream
//! (see [`tools`], [`control_plane`] and [`node`]), OCI images without Docker ([`oci`]) and,
//! with the `fixture` feature, the kube-rs test fixture that hands each integration test its
//! own namespace on it (see [`fixture`]).

pub mod cluster;
pub mod control_plane;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod node;
pub mod oci;
#[cfg(feature = "fixture")]
pub mod scenario;
pub mod tools;

//! Fjord's end-to-end test support: a real, local Kubernetes control plane built from upstream
//! (see [`tools`] and [`control_plane`]) and, with the `fixture` feature, the kube-rs test
//! fixture that hands each integration test its own namespace on it (see [`fixture`]).

pub mod control_plane;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod oci;
pub mod tools;

//! Pure planners for day-2 operations: the roll order of broker restarts ([`roll`]) and where
//! replicas go when brokers join or leave or a replication factor changes ([`assignment`]).
//! No I/O here, so every rule is unit- and property-tested; the reconcilers gather the inputs,
//! call these, and carry out the result.

pub mod assignment;
pub mod roll;

//! Pure planners for day-2 operations: the roll order of broker restarts ([`roll`]) and where
//! replicas go when brokers join or leave or a replication factor changes ([`assignment`]), and
//! how those moves are throttled and how much they still have to copy ([`throttle`]).
//! No I/O here, so every rule is unit- and property-tested; the reconcilers gather the inputs,
//! call these, and carry out the result.

pub mod assignment;
pub mod roll;
pub mod throttle;

//! A deploy's life, command by command: `apply` on its own, replicas
//! waiting for each other's lock, crowds of them at once, `status`,
//! `wait` and `unlock` beside them, server restarts in the middle, and
//! rolling deploys where an older release meets a newer schema.

mod ahead;
mod apply;
mod replicas;
mod restarts;
mod status;
mod storms;
mod unlock;
mod wait;

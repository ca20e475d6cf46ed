//! reposafe: a self-hosted backup appliance for Bitbucket Cloud and Bitbucket Data Center.
//!
//! The library is a set of modules with one job each (see `docs/ARCHITECTURE.md`):
//! `archive` (the on-disk backup format), `git` (fetch into mirrors, restore from packs),
//! `providers` (the WebAssembly provider host), `vault` (encrypted credentials), `state`
//! (redb tables), `tls` (per-connection certificate trust), `engine` (a backup or restore job, wiring the others) and `cli`.
//! Dependencies point one way: `engine` uses the rest; only `cli` uses `engine`.

pub mod api;
pub mod archive;
pub mod cli;
pub mod dashboard;
pub mod engine;
pub mod git;
pub mod providers;
pub mod scheduler;
pub mod state;
pub mod tls;
pub mod vault;

//! reposafe: a self-hosted backup appliance for Bitbucket Cloud and Bitbucket Data Center.
//!
//! The library is a set of modules with one job each (see `docs/ARCHITECTURE.md`):
//! `archive` (the on-disk backup format), `git` (fetch into mirrors, restore from packs),
//! `providers` (the WebAssembly provider host), `vault` (encrypted credentials), `state`
//! (redb tables), `tls` (per-connection certificate trust), `engine` (the command surface:
//! every operation once, behind the `Service` trait, wiring the others) and the front-ends
//! `cli`, `api` and `dashboard` (with `fmt`, how numbers and times are shown).
//! Dependencies point one way: front-ends → `engine` → the rest.

pub mod api;
pub mod archive;
pub mod cli;
pub mod dashboard;
pub mod engine;
pub mod fmt;
pub mod git;
pub mod lfs;
pub mod notify;
pub mod providers;
pub mod scheduler;
pub mod state;
pub mod tls;
pub mod vault;

//! Code generated from the `.proto` corpus in `proto/`: every package, as nested modules.

#![allow(missing_docs, clippy::all)]

rpc_core::include_protos!();

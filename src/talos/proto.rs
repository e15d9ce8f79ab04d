//! Generated protobuf/gRPC code (build.rs): Talos's events sink and machine API.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod common {
    tonic::include_proto!("common");
}
pub mod machine {
    tonic::include_proto!("machine");
}
pub mod events {
    tonic::include_proto!("events");
}

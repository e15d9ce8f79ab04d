//! Talos's side of the events sink, as kiln sees it: event payloads and a
//! client that publishes them from a node's own address. Shared by the tests
//! (through talos.rs), tests/fake-talos and bench/storm.

use std::net::SocketAddr;

/// Publish Talos events to kiln's sink *from* `from` (the sink knows a node only
/// by its address), as Talos does: one unary Publish per event, over a
/// connection with TCP_NODELAY as Go's net package sets it (without it each
/// call's DATA frame waits ~40 ms for the delayed ACK of its HEADERS).
pub async fn publish(
    sink: SocketAddr,
    from: std::net::Ipv4Addr,
    events: Vec<prost_types::Any>,
) -> Result<(), tonic::Status> {
    use kiln::talos::proto::events::event_sink_service_client::EventSinkServiceClient;
    use kiln::talos::proto::events::EventRequest;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{sink}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(
            move |_uri: tonic::transport::Uri| async move {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(from.into(), 0))?;
                let stream = s.connect(sink).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            },
        ))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = EventSinkServiceClient::new(ch);
    for (i, data) in events.into_iter().enumerate() {
        c.publish(EventRequest {
            data: Some(data),
            id: format!("ev{i}"),
            actor_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

/// Event payloads as Talos's sink sends them (anypb.New type URLs).
pub mod ev {
    use kiln::talos::proto::machine::machine_status_event::{MachineStage, MachineStatus};
    use kiln::talos::proto::machine::*;
    use prost::Message;

    fn any(name: &str, m: impl Message) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/machine.{name}"),
            value: m.encode_to_vec(),
        }
    }
    pub fn stage(s: MachineStage, ready: bool) -> prost_types::Any {
        any(
            "MachineStatusEvent",
            MachineStatusEvent {
                stage: s as i32,
                status: Some(MachineStatus {
                    ready,
                    unmet_conditions: vec![],
                }),
            },
        )
    }
    pub fn install_start() -> prost_types::Any {
        any(
            "SequenceEvent",
            SequenceEvent {
                sequence: "install".into(),
                action: sequence_event::Action::Start as i32,
                error: None,
            },
        )
    }
    pub fn install_done() -> prost_types::Any {
        any(
            "SequenceEvent",
            SequenceEvent {
                sequence: "install".into(),
                action: sequence_event::Action::Stop as i32,
                error: None,
            },
        )
    }
    /// The whole first boot as kiln sees it: booting, installing, installed, running.
    pub fn first_boot() -> Vec<prost_types::Any> {
        vec![
            stage(MachineStage::Booting, false),
            install_start(),
            stage(MachineStage::Installing, false),
            install_done(),
            stage(MachineStage::Running, false),
        ]
    }
}

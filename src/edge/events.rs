//! The Talos events sink (siderolink's `events.EventSinkService/Publish`):
//! plaintext gRPC, one unary call per event, no node identity in the request,
//! so the sender is the peer address. An event kiln cannot store is answered
//! with an error, which makes Talos reconnect and send it again.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::brain::Provisioner;
use crate::talos::proto::events::event_sink_service_server::{
    EventSinkService, EventSinkServiceServer,
};
use crate::talos::proto::events::{EventRequest, EventResponse};

pub(crate) struct Sink {
    pub p: Arc<Provisioner>,
    /// Called with each record that changed state (bootstrap watches it).
    pub on_change: Option<Arc<dyn Fn(crate::brain::Record) + Send + Sync>>,
}

#[tonic::async_trait]
impl EventSinkService for Sink {
    async fn publish(&self, req: Request<EventRequest>) -> Result<Response<EventResponse>, Status> {
        let peer = req.remote_addr();
        let ip = match peer.map(|a| a.ip()) {
            Some(IpAddr::V4(v4)) => v4,
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return Ok(Response::new(EventResponse {})),
            },
            None => return Ok(Response::new(EventResponse {})),
        };
        let r = req.into_inner();
        let Some(data) = r.data else {
            return Ok(Response::new(EventResponse {}));
        };
        let p = self.p.clone();
        let res = tokio::task::spawn_blocking(move || p.event(ip, &data.type_url, &data.value))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match res {
            Ok(Some(rec)) => {
                if let Some(cb) = &self.on_change {
                    cb(rec);
                }
                Ok(Response::new(EventResponse {}))
            }
            Ok(None) => Ok(Response::new(EventResponse {})),
            Err(e) => {
                tracing::error!(%ip, id = %r.id, "event not stored: {e}");
                Err(Status::unavailable("event not stored; send it again"))
            }
        }
    }
}

/// Serve the sink on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    sink: Sink,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // No Nagle: Talos sends one event per request and waits for the reply;
    // with delayed ACKs each one would stall ~40 ms (bench/storm.sh).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(EventSinkServiceServer::new(sink))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

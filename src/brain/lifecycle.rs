//! A machine's life as kiln follows it: discovered → booting (script served) →
//! config served → installing → installed → running → ready. States only move
//! forward (a late or replayed event never regresses a machine); `reinstall`
//! is the one way back.

use crate::store::machines::State;
use crate::talos::proto::machine::{
    machine_status_event::MachineStage, sequence_event, ConfigLoadErrorEvent,
    ConfigValidationErrorEvent, MachineStatusEvent, PhaseEvent, SequenceEvent,
};

/// What one Talos event means for the lifecycle: the state it proves (if any)
/// and a short description for `last_event`. Longer than most: one arm per
/// Talos event type, read side by side with machined's, is clearer split up
/// than scattered.
pub(crate) fn interpret(type_url: &str, value: &[u8]) -> (Option<State>, String) {
    use prost::Message;
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    match name {
        "machine.MachineStatusEvent" => match MachineStatusEvent::decode(value) {
            Ok(e) => {
                let stage = MachineStage::try_from(e.stage).unwrap_or(MachineStage::Unknown);
                let ready = e.status.as_ref().is_some_and(|s| s.ready);
                let state = match stage {
                    MachineStage::Installing => Some(State::Installing),
                    MachineStage::Running if ready => Some(State::Ready),
                    MachineStage::Running => Some(State::Running),
                    _ => None,
                };
                let unmet: Vec<String> = e
                    .status
                    .map(|s| s.unmet_conditions.into_iter().map(|u| u.name).collect())
                    .unwrap_or_default();
                let mut d = format!(
                    "stage {}{}",
                    stage.as_str_name().to_ascii_lowercase(),
                    if ready { ", ready" } else { "" }
                );
                if !unmet.is_empty() {
                    d.push_str(&format!(" (waiting for {})", unmet.join(", ")));
                }
                (state, d)
            }
            Err(e) => (None, format!("undecodable {name}: {e}")),
        },
        "machine.SequenceEvent" => match SequenceEvent::decode(value) {
            Ok(e) => {
                let action = sequence_event::Action::try_from(e.action)
                    .unwrap_or(sequence_event::Action::Noop);
                let err = e
                    .error
                    .as_ref()
                    .map(|x| x.message.clone())
                    .unwrap_or_default();
                let state = match (e.sequence.as_str(), action) {
                    ("install", sequence_event::Action::Start) => Some(State::Installing),
                    ("install", sequence_event::Action::Stop) if err.is_empty() => {
                        Some(State::Installed)
                    }
                    // The installer ends by rebooting; Talos reports that as an
                    // aborted sequence whose error is the reboot itself.
                    ("install", sequence_event::Action::Noop) if err.contains("unix.Reboot") => {
                        Some(State::Installed)
                    }
                    _ => None,
                };
                let d = format!(
                    "sequence {} {}{}",
                    e.sequence,
                    action.as_str_name().to_ascii_lowercase(),
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                );
                (state, d)
            }
            Err(e) => (None, format!("undecodable {name}: {e}")),
        },
        "machine.PhaseEvent" => match PhaseEvent::decode(value) {
            Ok(e) => {
                let state = (e.phase == "install" && e.action == 0).then_some(State::Installing);
                (
                    state,
                    format!(
                        "phase {} {}",
                        e.phase,
                        if e.action == 0 { "start" } else { "stop" }
                    ),
                )
            }
            Err(e) => (None, format!("undecodable {name}: {e}")),
        },
        "machine.ConfigLoadErrorEvent" => match ConfigLoadErrorEvent::decode(value) {
            Ok(e) => (None, format!("config load error: {}", e.error)),
            Err(e) => (None, format!("undecodable {name}: {e}")),
        },
        "machine.ConfigValidationErrorEvent" => match ConfigValidationErrorEvent::decode(value) {
            Ok(e) => (None, format!("config validation error: {}", e.error)),
            Err(e) => (None, format!("undecodable {name}: {e}")),
        },
        other => (None, other.trim_start_matches("machine.").to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::proto::machine::machine_status_event::MachineStatus;
    use prost::Message;

    #[test]
    fn events_map_to_states() {
        let st = |stage: MachineStage, ready: bool| {
            MachineStatusEvent {
                stage: stage as i32,
                status: Some(MachineStatus {
                    ready,
                    unmet_conditions: vec![],
                }),
            }
            .encode_to_vec()
        };
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.MachineStatusEvent",
                &st(MachineStage::Installing, false)
            )
            .0,
            Some(State::Installing)
        );
        assert_eq!(
            interpret(
                "talos/runtime/machine.MachineStatusEvent",
                &st(MachineStage::Running, false)
            )
            .0,
            Some(State::Running)
        );
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.MachineStatusEvent",
                &st(MachineStage::Running, true)
            )
            .0,
            Some(State::Ready)
        );
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.MachineStatusEvent",
                &st(MachineStage::Booting, false)
            )
            .0,
            None
        );
        let seq = |a: sequence_event::Action, err: &str| {
            SequenceEvent {
                sequence: "install".into(),
                action: a as i32,
                error: (!err.is_empty()).then(|| crate::talos::proto::common::Error {
                    code: 0,
                    message: err.into(),
                }),
            }
            .encode_to_vec()
        };
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.SequenceEvent",
                &seq(sequence_event::Action::Stop, "")
            )
            .0,
            Some(State::Installed)
        );
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.SequenceEvent",
                &seq(sequence_event::Action::Noop, "unix.Reboot(0x1234)")
            )
            .0,
            Some(State::Installed)
        );
        assert_eq!(
            interpret(
                "type.googleapis.com/machine.SequenceEvent",
                &seq(sequence_event::Action::Stop, "disk not found")
            )
            .0,
            None
        );
        let (s, d) = interpret(
            "type.googleapis.com/machine.MachineStatusEvent",
            &[0xff, 0xff],
        );
        assert!(s.is_none() && d.starts_with("undecodable"), "{d}");
    }
}

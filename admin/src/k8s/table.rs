//! `Table` answers (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), what `kubectl get`
//! prints: the Name column, then the kind's printer columns, cells computed as the API server
//! computes a CRD's (a string column of a list prints the list as JSON, a date prints its age).

use super::catalog::{Column, Served, Source};
use axum::http::{header, HeaderMap};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// Whether the client asked for a Table (kubectl lists it first in `Accept`).
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let params: Vec<&str> = t.split(';').map(str::trim).collect();
            params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
        })
}

/// A Table of `objects` (rendered objects), with `metadata` (`resourceVersion`, `continue`).
pub(crate) fn table(served: &Served, objects: &[Value], metadata: Value) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    defs.extend(served.columns.iter().map(|c| {
        json!({
            "name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
            "format": if c.type_ == "date" { "date" } else { "" },
            "description": c.description, "priority": c.priority,
        })
    }));
    let now = SystemTime::now();
    let rows: Vec<Value> = objects.iter().map(|o| row(served, o, now)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn row(served: &Served, o: &Value, now: SystemTime) -> Value {
    let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    cells.extend(served.columns.iter().map(|c| cell(c, o, now)));
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
        },
    })
}

fn cell(c: &Column, o: &Value, now: SystemTime) -> Value {
    let v = match &c.source {
        Source::Computed(f) => return f(o),
        Source::Path(p) => p.iter().try_fold(o, |v, k| v.get(k)),
    };
    let Some(v) = v else {
        return Value::Null;
    };
    match c.type_.as_str() {
        "date" => match v.as_str().and_then(crate::time::parse_rfc3339) {
            Some(t) => json!(human_duration(now.duration_since(t).unwrap_or_default())),
            None => Value::Null,
        },
        "string" => match v {
            Value::String(_) => v.clone(),
            other => json!(other.to_string()),
        },
        _ => v.clone(),
    }
}

/// Kubernetes' `duration.HumanDuration`: `45s`, `3m20s`, `5h10m`, `3d4h`, `400d`, `2y30d`.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Kind;

    #[test]
    fn durations_read_as_kubectl_prints_them() {
        let s = Duration::from_secs;
        assert_eq!(human_duration(s(45)), "45s");
        assert_eq!(human_duration(s(119)), "119s");
        assert_eq!(human_duration(s(200)), "3m20s");
        assert_eq!(human_duration(s(600)), "10m");
        assert_eq!(human_duration(s(5 * 3600 + 600)), "5h10m");
        assert_eq!(human_duration(s(30 * 3600)), "30h");
        assert_eq!(human_duration(s(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(human_duration(s(400 * 86400)), "400d");
        assert_eq!(human_duration(s((2 * 365 + 30) * 86400)), "2y30d");
    }

    #[test]
    fn virtual_service_rows_have_istios_cells() {
        let vs = super::super::catalog::of(Kind::VirtualService).expect("served");
        let o = json!({"metadata": {"name": "r", "creationTimestamp": crate::time::rfc3339(SystemTime::now())},
            "spec": {"hosts": ["a.example.com"], "gateways": ["gw"]}});
        let t = table(vs, &[o], json!({}));
        let cols: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("defs")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(cols, ["Name", "Gateways", "Hosts", "Age"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "r");
        assert_eq!(cells[1], "[\"gw\"]");
        assert_eq!(cells[2], "[\"a.example.com\"]");
        assert_eq!(cells[3], "0s");
    }
}

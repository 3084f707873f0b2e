//! DestinationRule locality settings, as Istio validates them: `localityLbSetting` (distribute
//! weights, overlapping localities, region failover, failover priority) and `zoneAwareLbSetting`.

use super::common::check_u32_count;
use super::findings::Findings;
use super::istio::TOPOLOGY_LABELS;
use super::path::FieldPath;
use crate::resource::{LocalityFailover, LocalityLbSetting, ZoneAwareLbSetting};
use std::collections::{BTreeMap, BTreeSet};

/// `localityLbSetting`. `outlier` says whether the same policy has outlierDetection, without which
/// failover never triggers.
pub(crate) fn check_locality(
    f: &mut Findings,
    p: &FieldPath,
    l: &LocalityLbSetting,
    outlier: bool,
) {
    // Istio stops at the first of these errors; every one is reported here, which refuses the
    // same resources.
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        f.forbidden(
            p,
            "distribute and failover are mutually exclusive: set only one of them",
        );
    }
    if !l.failover.is_empty() {
        if let Some((i, label)) = topology_label(&l.failover_priority) {
            f.forbidden(
                &p.field("failoverPriority").index(i),
                format!("topology label {label:?} may not be combined with failover, which already orders by region"),
            );
        }
    }

    let mut sources: Vec<(FieldPath, &str)> = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = p.field("distribute").index(i);
        sources.push((dp.field("from"), d.from.as_str()));
        let tp = dp.field("to");
        let mut weights_ok = true;
        for (to, w) in &d.to {
            if !(1..=100).contains(w) {
                f.invalid(
                    &tp.key(to),
                    w,
                    "a locality weight must be between 1 and 100",
                );
                weights_ok = false;
            }
        }
        let total: i64 = d.to.values().sum();
        if weights_ok && total != 100 {
            f.invalid(&tp, &total, "the weights must add up to 100");
        }
        let targets: Vec<(FieldPath, &str)> =
            d.to.keys().map(|k| (tp.key(k), k.as_str())).collect();
        check_localities(f, &targets);
    }
    check_localities(f, &sources);

    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !outlier {
        f.warn(
            &p.field("failover"),
            "locality failover takes effect only with outlierDetection; add outlierDetection",
        );
    }
    check_failover(f, &p.field("failover"), &l.failover);
}

/// `zoneAwareLbSetting`: Envoy orders zones and subzones itself, so failover names regions and
/// failoverPriority may not use the topology labels.
pub(crate) fn check_zone_aware(
    f: &mut Findings,
    p: &FieldPath,
    z: &ZoneAwareLbSetting,
    outlier: bool,
) {
    for (i, label) in z.failover_priority.iter().enumerate() {
        if TOPOLOGY_LABELS.contains(&label.as_str()) {
            f.invalid(
                &p.field("failoverPriority").index(i),
                label.as_str(),
                "zone-aware balancing orders by region, zone and subzone already: use other labels",
            );
        }
    }
    if (!z.failover.is_empty() || !z.failover_priority.is_empty()) && !outlier {
        f.warn(
            &p.field("failover"),
            "failover takes effect only with outlierDetection; add outlierDetection",
        );
    }
    check_failover(f, &p.field("failover"), &z.failover);
    if let Some(n) = z.min_cluster_size {
        let mp = p.field("minClusterSize");
        if n < 1 {
            f.invalid(&mp, &n, "must be >= 1");
        } else {
            check_u32_count(f, &mp, n);
        }
    }
}

fn topology_label(labels: &[String]) -> Option<(usize, &str)> {
    labels
        .iter()
        .enumerate()
        .find(|(_, l)| TOPOLOGY_LABELS.contains(&l.as_str()))
        .map(|(i, l)| (i, l.as_str()))
}

fn check_failover(f: &mut Findings, p: &FieldPath, failover: &[LocalityFailover]) {
    for (i, fo) in failover.iter().enumerate() {
        let fp = p.index(i);
        if fo.from == fo.to {
            f.invalid(
                &fp.field("to"),
                fo.to.as_str(),
                "failover must go to a different region than from",
            );
        }
        for (name, v) in [("from", &fo.from), ("to", &fo.to)] {
            if v.contains('/') {
                f.invalid(
                    &fp.field(name),
                    v.as_str(),
                    "failover names regions only (no '/'): zones are ordered automatically",
                );
            }
            if v.contains('*') {
                f.invalid(&fp.field(name), v.as_str(), "a region may not contain '*'");
            }
        }
    }
}

/// Istio's `validateLocalities`, in list order: `region[/zone[/subzone]]` with at most one `*`, at
/// the end; no empty part; no locality inside one given before it (`a` then `a/b`, `*` then
/// anything). A whole region or zone is recorded as a `*` below it, as Istio does.
fn check_localities(f: &mut Findings, localities: &[(FieldPath, &str)]) {
    type Zones<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;
    let mut regions: BTreeMap<&str, Zones<'_>> = BTreeMap::new();
    let whole = || BTreeSet::from(["*"]);
    for (path, locality) in localities {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            f.invalid(
                path,
                *locality,
                "a locality may hold one '*', and only at its end",
            );
            return;
        }
        let overlap = |f: &mut Findings| {
            f.invalid(path, *locality, "overlaps a locality given before it");
        };
        if regions.contains_key("*") {
            return overlap(f);
        }
        let parts: Vec<&str> = locality.splitn(3, '/').collect();
        if parts.iter().any(|s| s.is_empty()) {
            f.invalid(
                path,
                *locality,
                "must be region, region/zone or region/zone/subzone, with no empty part",
            );
            return;
        }
        match parts.as_slice() {
            [region] => {
                if regions.contains_key(region) {
                    return overlap(f);
                }
                regions.insert(region, Zones::from([("*", whole())]));
            }
            [region, zone] => match regions.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") || zones.contains_key(zone) {
                        return overlap(f);
                    }
                    zones.insert(zone, whole());
                }
                None => {
                    regions.insert(region, Zones::from([(*zone, whole())]));
                }
            },
            [region, zone, subzone] => match regions.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") {
                        return overlap(f);
                    }
                    match zones.get_mut(zone) {
                        Some(subzones) => {
                            if subzones.contains("*") || !subzones.insert(subzone) {
                                return overlap(f);
                            }
                        }
                        None => {
                            zones.insert(zone, BTreeSet::from([*subzone]));
                        }
                    }
                }
                None => {
                    regions.insert(region, Zones::from([(*zone, BTreeSet::from([*subzone]))]));
                }
            },
            _ => {}
        }
    }
}

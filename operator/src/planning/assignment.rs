//! Where each partition's replicas should live after brokers join, brokers are drained, or a
//! topic's replication factor changes.
//!
//! Pure: the reconcilers read the current assignment and the brokers, call [`plan`], and submit
//! the partitions whose replica list changed as one KIP-455 reassignment. The first replica of a
//! list is the preferred leader, so reordering a list moves leadership without moving data.
//!
//! Rules, in priority order: a partition never has two replicas on one broker; replicas live only
//! on the brokers given; each partition gets its target replication factor; replicas spread over
//! as many racks as there are (a move never lowers a partition's rack count); and, when asked to
//! balance, replicas and preferred leaders per broker end within one of each other with as few
//! moves as the greedy search finds (none when the cluster is already balanced).
//!
//! Which replica a balancing move takes matters as much as how many move: it is one of the
//! topic most concentrated on the source broker compared with the target, so every topic
//! spreads onto new brokers. Taking the first candidate instead let a cluster whose partition
//! count is dominated by one topic (Kafka's 50-partition `__consumer_offsets`, say) balance its
//! counts by moving only that topic, leaving the data topics where they were.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A broker replicas may be placed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSlot {
    pub id: i32,
    /// `broker.rack`; brokers without one each count as a rack of their own.
    pub rack: Option<String>,
}

/// One partition and its replica list (preferred leader first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// What the plan must achieve.
#[derive(Clone, Debug, Default)]
pub struct Goal {
    /// Where replicas may live (a broker missing here is drained).
    pub brokers: Vec<BrokerSlot>,
    /// New replication factors by topic; other topics keep theirs.
    pub replication_factors: BTreeMap<String, usize>,
    /// Also even out replicas and preferred leaders over all brokers (after a scale-up). Without
    /// it only the replicas that must move (drained brokers, RF changes) are placed.
    pub balance: bool,
}

/// Why no plan exists; nothing should be changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no brokers to place replicas on")]
    NoBrokers,
    #[error("{} broker(s) cannot hold {}", .brokers, describe_topics(.topics))]
    NotEnoughBrokers {
        brokers: usize,
        /// Topics whose replication factor exceeds the broker count, with that factor.
        topics: Vec<(String, usize)>,
    },
}

fn describe_topics(topics: &[(String, usize)]) -> String {
    topics
        .iter()
        .map(|(t, rf)| format!("topic {t} (replication factor {rf})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The target assignment for `current` (same partitions, same order).
pub fn plan(
    current: &[PartitionReplicas],
    goal: &Goal,
) -> Result<Vec<PartitionReplicas>, PlanError> {
    if goal.brokers.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    let mut state = Placement::new(&goal.brokers, current);
    let targets: Vec<usize> = current
        .iter()
        .map(|p| {
            goal.replication_factors
                .get(&p.topic)
                .copied()
                .unwrap_or(p.replicas.len())
                .max(1)
        })
        .collect();
    let mut too_big: BTreeMap<String, usize> = BTreeMap::new();
    for (p, &rf) in current.iter().zip(&targets) {
        if rf > goal.brokers.len() {
            too_big.insert(p.topic.clone(), rf);
        }
    }
    if !too_big.is_empty() {
        return Err(PlanError::NotEnoughBrokers {
            brokers: goal.brokers.len(),
            topics: too_big.into_iter().collect(),
        });
    }
    for (index, &rf) in targets.iter().enumerate() {
        while state.partitions[index].len() > rf {
            state.shrink(index);
        }
    }
    for (index, &rf) in targets.iter().enumerate() {
        while state.partitions[index].len() < rf {
            state.grow(index);
        }
    }
    if goal.balance {
        state.balance_replicas();
        state.balance_leaders();
    }
    Ok(current
        .iter()
        .zip(state.partitions)
        .map(|(p, replicas)| PartitionReplicas {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas,
        })
        .collect())
}

/// The partitions whose replica list differs between `current` and `target` (as `target` has
/// them): what goes into the reassignment request.
pub fn changes(
    current: &[PartitionReplicas],
    target: &[PartitionReplicas],
) -> Vec<PartitionReplicas> {
    current
        .iter()
        .zip(target)
        .filter(|(c, t)| c.replicas != t.replicas)
        .map(|(_, t)| t.clone())
        .collect()
}

/// How many replicas `target` places on a broker that did not hold them (data to copy).
pub fn replica_moves(current: &[PartitionReplicas], target: &[PartitionReplicas]) -> usize {
    current
        .iter()
        .zip(target)
        .map(|(c, t)| {
            t.replicas
                .iter()
                .filter(|b| !c.replicas.contains(b))
                .count()
        })
        .sum()
}

/// Replicas per broker (every broker of `brokers` appears, with 0 if it holds none).
pub fn replica_counts(assignment: &[PartitionReplicas], brokers: &[i32]) -> BTreeMap<i32, usize> {
    let mut counts: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    for p in assignment {
        for b in &p.replicas {
            *counts.entry(*b).or_default() += 1;
        }
    }
    counts
}

/// Preferred leaders per broker (every broker of `brokers` appears).
pub fn leader_counts(assignment: &[PartitionReplicas], brokers: &[i32]) -> BTreeMap<i32, usize> {
    let mut counts: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    for p in assignment {
        if let Some(b) = p.replicas.first() {
            *counts.entry(*b).or_default() += 1;
        }
    }
    counts
}

/// One link of a chain: `to` replaces `from` as preferred leader of `partition` (leadership
/// chains), or takes over `from`'s replica of it (replica chains).
#[derive(Clone, Debug)]
struct Step {
    partition: usize,
    from: i32,
    to: i32,
}

/// The working copy the planner edits: replica lists plus per-broker counts kept in step.
#[derive(Clone)]
struct Placement {
    brokers: Vec<i32>,
    racks: BTreeMap<i32, String>,
    partitions: Vec<Vec<i32>>,
    /// The topic of each partition (an index into the distinct topic names).
    topics: Vec<usize>,
    load: BTreeMap<i32, usize>,
}

impl Placement {
    fn new(brokers: &[BrokerSlot], current: &[PartitionReplicas]) -> Placement {
        let allowed: BTreeSet<i32> = brokers.iter().map(|b| b.id).collect();
        let racks = brokers
            .iter()
            .map(|b| {
                let rack = b
                    .rack
                    .clone()
                    .unwrap_or_else(|| format!("\0broker-{}", b.id));
                (b.id, rack)
            })
            .collect();
        // Keep what may stay: replicas on allowed brokers, each broker once, in order.
        let partitions: Vec<Vec<i32>> = current
            .iter()
            .map(|p| {
                let mut kept: Vec<i32> = Vec::with_capacity(p.replicas.len());
                for &b in &p.replicas {
                    if allowed.contains(&b) && !kept.contains(&b) {
                        kept.push(b);
                    }
                }
                kept
            })
            .collect();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let topics = current
            .iter()
            .map(|p| {
                let next = names.len();
                *names.entry(p.topic.as_str()).or_insert(next)
            })
            .collect();
        let ids: Vec<i32> = allowed.into_iter().collect();
        let mut placement = Placement {
            load: ids.iter().map(|&b| (b, 0)).collect(),
            brokers: ids,
            racks,
            partitions,
            topics,
        };
        for replicas in &placement.partitions {
            for b in replicas {
                *placement
                    .load
                    .get_mut(b)
                    .expect("kept replicas are on allowed brokers") += 1;
            }
        }
        placement
    }

    fn rack(&self, broker: i32) -> &str {
        &self.racks[&broker]
    }

    fn rack_count(&self, replicas: &[i32]) -> usize {
        replicas
            .iter()
            .map(|&b| self.rack(b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Drops one replica: from a rack the partition has twice if any, then the most loaded broker,
    /// and the preferred leader only when it is the last choice.
    fn shrink(&mut self, index: usize) {
        let replicas = &self.partitions[index];
        let victim = (0..replicas.len())
            .max_by_key(|&i| {
                let b = replicas[i];
                let shares_rack = replicas
                    .iter()
                    .filter(|&&o| o != b && self.rack(o) == self.rack(b))
                    .count()
                    > 0;
                (i != 0 || replicas.len() == 1, shares_rack, self.load[&b], b)
            })
            .expect("shrink is called on a non-empty list");
        let broker = self.partitions[index].remove(victim);
        *self.load.get_mut(&broker).expect("allowed broker") -= 1;
    }

    /// Adds one replica on a new rack if possible, else on the least loaded broker.
    fn grow(&mut self, index: usize) {
        let replicas = &self.partitions[index];
        let used_racks: BTreeSet<&str> = replicas.iter().map(|&b| self.rack(b)).collect();
        let chosen = self
            .brokers
            .iter()
            .copied()
            .filter(|b| !replicas.contains(b))
            .min_by_key(|&b| (used_racks.contains(self.rack(b)), self.load[&b], b))
            .expect("the replication factor was checked against the broker count");
        self.partitions[index].push(chosen);
        *self.load.get_mut(&chosen).expect("allowed broker") += 1;
    }

    /// Moves replicas from the most to the least loaded brokers until loads are within one.
    /// A replica moves directly, or along a chain of brokers when racks forbid the direct move
    /// (m -> z in one partition, z -> n in another: z's load is unchanged). Each step lowers the
    /// sum of squared loads, so the loop ends.
    fn balance_replicas(&mut self) {
        while self.improve_replicas() {}
    }

    /// One replica-balancing step; false when none exists.
    fn improve_replicas(&mut self) -> bool {
        let topic_loads = self.topic_loads();
        let mut by_load: Vec<i32> = self.brokers.clone();
        by_load.sort_by_key(|b| (std::cmp::Reverse(self.load[b]), *b));
        for &from in &by_load {
            let mut paths: BTreeMap<i32, Vec<Step>> = BTreeMap::from([(from, Vec::new())]);
            let mut queue = VecDeque::from([from]);
            while let Some(x) = queue.pop_front() {
                for &y in by_load.iter().rev() {
                    if paths.contains_key(&y) {
                        continue;
                    }
                    let Some(partition) = self.movable(x, y, &topic_loads) else {
                        continue;
                    };
                    let mut path = paths[&x].clone();
                    path.push(Step {
                        partition,
                        from: x,
                        to: y,
                    });
                    if self.load[&y] + 2 <= self.load[&from] {
                        let mut trial = self.clone();
                        if trial.move_along(&path) {
                            *self = trial;
                            return true;
                        }
                    }
                    paths.insert(y, path);
                    queue.push_back(y);
                }
            }
        }
        false
    }

    /// Moves each step's replica from `from` to `to`; false at a step that no longer applies.
    fn move_along(&mut self, path: &[Step]) -> bool {
        for step in path {
            let replicas = &self.partitions[step.partition];
            let Some(slot) = replicas.iter().position(|&b| b == step.from) else {
                return false;
            };
            if replicas.contains(&step.to) || !self.keeps_racks(replicas, slot, step.to) {
                return false;
            }
            self.partitions[step.partition][slot] = step.to;
            *self.load.get_mut(&step.from).expect("allowed") -= 1;
            *self.load.get_mut(&step.to).expect("allowed") += 1;
        }
        true
    }

    /// Replicas per (topic, broker).
    fn topic_loads(&self) -> BTreeMap<(usize, i32), usize> {
        let mut loads = BTreeMap::new();
        for (replicas, &topic) in self.partitions.iter().zip(&self.topics) {
            for &b in replicas {
                *loads.entry((topic, b)).or_default() += 1;
            }
        }
        loads
    }

    /// A partition with a replica on `from`, none on `to`, whose rack count would not drop if
    /// that replica moved to `to`. Followers are preferred over preferred leaders, then the
    /// topic with the most replicas on `from` compared with `to` (see the module doc).
    fn movable(
        &self,
        from: i32,
        to: i32,
        topic_loads: &BTreeMap<(usize, i32), usize>,
    ) -> Option<usize> {
        let on = |topic: usize, broker: i32| {
            topic_loads.get(&(topic, broker)).copied().unwrap_or(0) as i64
        };
        let mut best: Option<((bool, i64), usize)> = None;
        for (index, replicas) in self.partitions.iter().enumerate() {
            let Some(slot) = replicas.iter().position(|&b| b == from) else {
                continue;
            };
            if replicas.contains(&to) {
                continue;
            }
            if !self.keeps_racks(replicas, slot, to) {
                continue;
            }
            let topic = self.topics[index];
            let key = (slot != 0, on(topic, from) - on(topic, to));
            if best.is_none_or(|(best_key, _)| key > best_key) {
                best = Some((key, index));
            }
        }
        best.map(|(_, index)| index)
    }

    /// Evens out preferred leaders per broker (to within one of each other).
    ///
    /// Leadership moves along chains of partitions: broker x leads a partition with a replica on
    /// y, so making y its preferred leader hands one leadership from x to y without moving data.
    /// A chain from an overloaded broker to one leading two fewer is the cheap fix. Where none
    /// reaches, a chain to some x, a hand-over from x to some y ([`Self::hand_over`]: one
    /// replica moved or two swapped, replica balance kept) and a chain from y to the
    /// underloaded broker do it. A step is kept only if it lowers the objective (replica spread,
    /// then the sum of squared leader counts), so the loop ends.
    fn balance_leaders(&mut self) {
        while self.improve_leaders() {}
    }

    /// (replica spread, counted as at least one; sum of squared leader counts): lower is better.
    fn objective(&self) -> (usize, usize) {
        let max = self.load.values().max().copied().unwrap_or(0);
        let min = self.load.values().min().copied().unwrap_or(0);
        let squares = self.leader_counts().values().map(|l| l * l).sum();
        ((max - min).max(1), squares)
    }

    /// One leadership-balancing step; false when no step improves the objective.
    fn improve_leaders(&mut self) -> bool {
        let leaders = self.leader_counts();
        let mut by_leaders: Vec<i32> = self.brokers.clone();
        by_leaders.sort_by_key(|b| (leaders[b], *b));
        let before = self.objective();
        for &from in by_leaders.iter().rev() {
            let underloaded: Vec<i32> = by_leaders
                .iter()
                .copied()
                .take_while(|n| leaders[n] + 2 <= leaders[&from])
                .collect();
            if underloaded.is_empty() {
                continue;
            }
            let from_paths = self.leadership_paths(from);
            if let Some(path) = underloaded.iter().find_map(|n| from_paths.get(n)) {
                let path = path.clone();
                self.shift_along(&path);
                return true;
            }
            for &n in &underloaded {
                let feeders: Vec<(i32, Vec<Step>)> = self
                    .brokers
                    .iter()
                    .filter_map(|&y| self.leadership_paths(y).remove(&n).map(|p| (y, p)))
                    .collect();
                for (x, to_x) in &from_paths {
                    for (y, y_to_n) in &feeders {
                        if x == y {
                            continue;
                        }
                        let mut trial = self.clone();
                        if trial.shift_along(to_x)
                            && trial.hand_over(*x, *y)
                            && trial.shift_along(y_to_n)
                            && trial.objective() < before
                        {
                            *self = trial;
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    fn leader_counts(&self) -> BTreeMap<i32, usize> {
        let mut leaders: BTreeMap<i32, usize> = self.brokers.iter().map(|&b| (b, 0)).collect();
        for replicas in &self.partitions {
            if let Some(b) = replicas.first() {
                *leaders.get_mut(b).expect("allowed") += 1;
            }
        }
        leaders
    }

    /// Every broker leadership can be handed to from `from` by reordering, with the shortest
    /// chain of steps that does it (`from` itself: no steps).
    fn leadership_paths(&self, from: i32) -> BTreeMap<i32, Vec<Step>> {
        let mut led_by: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (index, replicas) in self.partitions.iter().enumerate() {
            if let Some(&leader) = replicas.first() {
                led_by.entry(leader).or_default().push(index);
            }
        }
        let mut paths = BTreeMap::from([(from, Vec::new())]);
        let mut queue = VecDeque::from([from]);
        while let Some(x) = queue.pop_front() {
            for &index in led_by.get(&x).map(Vec::as_slice).unwrap_or_default() {
                for &y in &self.partitions[index][1..] {
                    if paths.contains_key(&y) {
                        continue;
                    }
                    let mut path = paths[&x].clone();
                    path.push(Step {
                        partition: index,
                        from: x,
                        to: y,
                    });
                    paths.insert(y, path);
                    queue.push_back(y);
                }
            }
        }
        paths
    }

    /// Makes each step's broker the preferred leader of its partition; false (and stops) at a
    /// step that no longer applies because an earlier change touched its partition.
    fn shift_along(&mut self, path: &[Step]) -> bool {
        for step in path {
            let replicas = &mut self.partitions[step.partition];
            if replicas.first() != Some(&step.from) {
                return false;
            }
            let Some(slot) = replicas.iter().position(|&b| b == step.to) else {
                return false;
            };
            replicas.swap(0, slot);
        }
        true
    }

    /// Hands one preferred leadership from `x` to `y` through a data move that keeps the
    /// replica balance: [`Self::move_step`] or else [`Self::swap_step`].
    fn hand_over(&mut self, x: i32, y: i32) -> bool {
        if let Some(led) = self.move_step(x, y) {
            self.partitions[led][0] = y;
            *self.load.get_mut(&x).expect("allowed") -= 1;
            *self.load.get_mut(&y).expect("allowed") += 1;
            return true;
        }
        match self.swap_step(x, y) {
            Some(swap) => {
                self.apply_swap(swap, x, y);
                true
            }
            None => false,
        }
    }

    /// A partition `x` leads that can move to `n` outright: `n` holds fewer replicas than `x`
    /// (so replica counts stay as balanced), does not hold this one, and racks do not drop.
    fn move_step(&self, x: i32, n: i32) -> Option<usize> {
        if self.load[&n] >= self.load[&x] {
            return None;
        }
        self.partitions
            .iter()
            .position(|r| r.first() == Some(&x) && !r.contains(&n) && self.keeps_racks(r, 0, n))
    }

    /// A swap handing one preferred leadership from `x` to `n` with replica counts unchanged:
    /// a partition `x` leads (without `n`) and one where `n` follows (without `x`); racks never
    /// drop. Returns the two partition indexes.
    fn swap_step(&self, x: i32, n: i32) -> Option<(usize, usize)> {
        let led = self
            .partitions
            .iter()
            .position(|r| r.first() == Some(&x) && !r.contains(&n) && self.keeps_racks(r, 0, n))?;
        let followed = self.partitions.iter().position(|r| {
            !r.contains(&x)
                && r.iter()
                    .skip(1)
                    .position(|&b| b == n)
                    .is_some_and(|slot| self.keeps_racks(r, slot + 1, x))
        })?;
        Some((led, followed))
    }

    fn apply_swap(&mut self, (led, followed): (usize, usize), x: i32, n: i32) {
        self.partitions[led][0] = n;
        let slot = self.partitions[followed]
            .iter()
            .position(|&b| b == n)
            .expect("swap_step found it");
        self.partitions[followed][slot] = x;
    }

    /// Would putting `to` in `slot` of `replicas` keep the partition's rack count?
    fn keeps_racks(&self, replicas: &[i32], slot: usize, to: i32) -> bool {
        let mut after = replicas.to_vec();
        after[slot] = to;
        self.rack_count(&after) >= self.rack_count(replicas)
    }
}

#[cfg(test)]
#[path = "assignment_tests.rs"]
mod tests;

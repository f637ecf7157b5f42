//! Where the nodes are, and who is in range of whom.
//!
//! Positions live in a square whose side is chosen so that a random
//! geometric graph with the scenario's radio range has the scenario's mean
//! degree. Neighbour sets are computed with a grid of range-sized cells and
//! kept sorted, so that iterating them is deterministic. Partitions are
//! walls: an edge that crosses a closed wall is cut.

use rand::RngExt;
use rand::rngs::StdRng;

use super::scenario::{Axis, Carrier, Mobility, Scenario};

/// A node's movement plan.
#[derive(Clone, Debug)]
pub enum Motion {
    /// Never moves.
    Still,
    /// Random waypoint: heading to `to` at `speed` m/s, or pausing until
    /// `pause_until` (simulated seconds).
    Waypoint {
        /// Where to.
        to: [f64; 2],
        /// Metres per second.
        speed: f64,
        /// Pausing until this time, seconds.
        pause_until: f64,
    },
    /// Shuttling along a fixed route, back and forth.
    Route {
        /// Stops, metres.
        stops: Vec<[f64; 2]>,
        /// Index of the stop heading to.
        next: usize,
        /// +1 or -1 along the route.
        dir: isize,
        /// Metres per second.
        speed: f64,
        /// Pause at stops, seconds.
        pause: f64,
        /// Pausing until this time, seconds.
        pause_until: f64,
    },
}

/// Positions, range and neighbour sets.
#[derive(Debug)]
pub struct World {
    /// Side of the square, metres.
    pub side: f64,
    /// Radio range, metres.
    pub range: f64,
    /// Position of each node, metres.
    pub pos: Vec<[f64; 2]>,
    /// How each node moves.
    pub motion: Vec<Motion>,
    /// Walls currently closed: (axis, coordinate in metres).
    pub walls: Vec<(Axis, f64)>,
    /// Sorted neighbours of each node (in range, not cut by a wall).
    pub adj: Vec<Vec<u32>>,
}

fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    dx * dx + dy * dy
}

impl World {
    /// Place `n` nodes uniformly and size the square for the scenario's
    /// mean degree (a few rounds of rescaling correct for the border).
    pub fn generate(s: &Scenario, rng: &mut StdRng) -> World {
        let n = s.nodes as usize;
        let unit: Vec<[f64; 2]> = (0..n).map(|_| [rng.random::<f64>(), rng.random::<f64>()]).collect();
        let range = s.graph.range_m;
        let target = s.graph.mean_degree;
        let mut side = (n as f64 * std::f64::consts::PI * range * range / target).sqrt();
        let mut world =
            World { side, range, pos: Vec::new(), motion: vec![Motion::Still; n], walls: Vec::new(), adj: Vec::new() };
        for _ in 0..4 {
            world.side = side;
            world.pos = unit.iter().map(|p| [p[0] * side, p[1] * side]).collect();
            world.rebuild();
            let got = world.mean_degree();
            if got <= 0.0 || (got - target).abs() / target < 0.005 {
                break;
            }
            side *= (got / target).sqrt();
        }
        world
    }

    /// Mean number of neighbours.
    pub fn mean_degree(&self) -> f64 {
        let total: usize = self.adj.iter().map(Vec::len).sum();
        total as f64 / self.adj.len().max(1) as f64
    }

    fn cut(&self, a: [f64; 2], b: [f64; 2]) -> bool {
        self.walls.iter().any(|&(axis, at)| {
            let (u, v) = match axis {
                Axis::X => (a[0], b[0]),
                Axis::Y => (a[1], b[1]),
            };
            (u < at) != (v < at)
        })
    }

    /// Recompute every neighbour set from the positions and walls.
    pub fn rebuild(&mut self) {
        let n = self.pos.len();
        let cells = ((self.side / self.range).floor() as usize).clamp(1, 4096);
        let cell_of = |p: [f64; 2]| -> (usize, usize) {
            let f = |v: f64| ((v / self.side * cells as f64).floor().max(0.0) as usize).min(cells - 1);
            (f(p[0]), f(p[1]))
        };
        let mut grid: Vec<Vec<u32>> = vec![Vec::new(); cells * cells];
        for (i, &p) in self.pos.iter().enumerate() {
            let (cx, cy) = cell_of(p);
            if let Some(c) = grid.get_mut(cy * cells + cx) {
                c.push(i as u32);
            }
        }
        let r2 = self.range * self.range;
        let mut adj = vec![Vec::new(); n];
        for (i, &p) in self.pos.iter().enumerate() {
            let (cx, cy) = cell_of(p);
            let list: &mut Vec<u32> = &mut adj[i];
            for y in cy.saturating_sub(1)..=(cy + 1).min(cells - 1) {
                for x in cx.saturating_sub(1)..=(cx + 1).min(cells - 1) {
                    for &j in &grid[y * cells + x] {
                        let q = self.pos[j as usize];
                        if j as usize != i && dist2(p, q) <= r2 && !self.cut(p, q) {
                            list.push(j);
                        }
                    }
                }
            }
            list.sort_unstable();
        }
        self.adj = adj;
    }

    /// Sizes of the connected components, largest first, and the largest
    /// one's members (sorted).
    pub fn largest_component(&self) -> Vec<u32> {
        let n = self.adj.len();
        let mut comp = vec![u32::MAX; n];
        let mut best: Vec<u32> = Vec::new();
        for start in 0..n {
            if comp[start] != u32::MAX {
                continue;
            }
            let mut members = vec![start as u32];
            comp[start] = start as u32;
            let mut k = 0;
            while let Some(&v) = members.get(k) {
                k += 1;
                for &w in &self.adj[v as usize] {
                    if comp[w as usize] == u32::MAX {
                        comp[w as usize] = start as u32;
                        members.push(w);
                    }
                }
            }
            if members.len() > best.len() {
                best = members;
            }
        }
        best.sort_unstable();
        best
    }

    /// Give node `i` random-waypoint motion.
    pub fn set_waypoint(&mut self, i: usize, m: &Mobility, rng: &mut StdRng) {
        let to = [rng.random::<f64>() * self.side, rng.random::<f64>() * self.side];
        let speed = m.speed_min + rng.random::<f64>() * (m.speed_max - m.speed_min);
        self.motion[i] = Motion::Waypoint { to, speed, pause_until: 0.0 };
    }

    /// Make node `i` a carrier on `c`'s route, starting at its first stop.
    pub fn set_route(&mut self, i: usize, c: &Carrier) {
        let stops: Vec<[f64; 2]> = c.route.iter().map(|p| [p[0] * self.side, p[1] * self.side]).collect();
        self.pos[i] = stops[0];
        self.motion[i] =
            Motion::Route { stops, next: 1, dir: 1, speed: c.speed, pause: c.pause_secs, pause_until: 0.0 };
    }

    /// Advance every moving node by `dt` seconds, ending at time `t`.
    pub fn step(&mut self, t: f64, dt: f64, mobility: Option<&Mobility>, rng: &mut StdRng) {
        let side = self.side;
        for (i, motion) in self.motion.iter_mut().enumerate() {
            let p = &mut self.pos[i];
            match motion {
                Motion::Still => {}
                Motion::Waypoint { to, speed, pause_until } => {
                    if t < *pause_until {
                        continue;
                    }
                    if advance(p, *to, *speed * dt)
                        && let Some(m) = mobility
                    {
                        *pause_until = t + m.pause_secs;
                        *to = [rng.random::<f64>() * side, rng.random::<f64>() * side];
                        *speed = m.speed_min + rng.random::<f64>() * (m.speed_max - m.speed_min);
                    }
                }
                Motion::Route { stops, next, dir, speed, pause, pause_until } => {
                    if t < *pause_until {
                        continue;
                    }
                    if advance(p, stops[*next], *speed * dt) {
                        *pause_until = t + *pause;
                        let last = stops.len() - 1;
                        if (*next == last && *dir > 0) || (*next == 0 && *dir < 0) {
                            *dir = -*dir;
                        }
                        *next = next.saturating_add_signed(*dir).min(last);
                    }
                }
            }
        }
    }
}

/// Move `p` toward `to` by `by` metres; returns whether it arrived.
fn advance(p: &mut [f64; 2], to: [f64; 2], by: f64) -> bool {
    let d = dist2(*p, to).sqrt();
    if d <= by || d == 0.0 {
        *p = to;
        return true;
    }
    let f = by / d;
    p[0] += (to[0] - p[0]) * f;
    p[1] += (to[1] - p[1]) * f;
    false
}

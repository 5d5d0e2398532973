// Classifies the raw JSON results of http-tests/cache-tests (npm http-cache-tests) with the suite's
// own determineTestResult (lib/display.mjs, dependencies honoured as on cache-tests.fyi) and prints
// counts per class and the failing tests. Used by scripts/cache-conformance.
//   node scripts/cache-conformance-summary.mjs SUITE_DIR RESULTS.json [CLASSIFIED.json]
// CLASSIFIED.json (optional) gets one row per test: id, suite, name, kind, class, result.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, resultsFile, classifiedFile] = process.argv.slice(2)
if (!suiteDir || !resultsFile) {
  console.error('usage: cache-conformance-summary.mjs SUITE_DIR RESULTS.json [CLASSIFIED.json]')
  process.exit(2)
}
const load = rel => import(pathToFileURL(join(suiteDir, rel)).href)
const { determineTestResult } = await load('lib/display.mjs')
const suites = (await load('tests/index.mjs')).default
const surrogate = (await load('tests/surrogate-control.mjs')).default
if (!suites.includes(surrogate)) suites.push(surrogate) // as cli.mjs does
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))

// determineTestResult returns [font glyph, colour, text symbol]; name the classes by symbol.
const CLASSES = [
  ['✅', 'pass', 'pass'],
  ['⛔️', 'fail', 'required fail (kind "required": likely a conformance problem)'],
  ['⚠️', 'optional_fail', 'optional fail (kind "optimal": not optimal, not a conformance problem)'],
  ['Y', 'yes', 'check: yes (kind "check", informational)'],
  ['N', 'no', 'check: no (kind "check", informational)'],
  ['⚪️', 'dependency_fail', 'dependency fail (a test it depends on did not pass)'],
  ['🔹', 'setup_fail', 'setup fail (the harness could not set the test up)'],
  ['↻', 'retry', 'retry (the cache retried a request; read by hand)'],
  ['⁉️', 'harness_fail', 'harness fail'],
  ['-', 'untested', 'untested (not run by the CLI, e.g. browser-only)']
]
const bySymbol = new Map(CLASSES.map(([sym, cls]) => [sym, cls]))

const rows = []
for (const suite of suites) {
  for (const test of suite.tests) {
    const symbol = determineTestResult(suites, test.id, results)[2]
    const cls = bySymbol.get(symbol)
    if (!cls) throw new Error(`unknown result symbol ${symbol} for ${test.id}`)
    rows.push({ id: test.id, suite: suite.id, name: test.name, kind: test.kind || 'required', class: cls, result: results[test.id], depends_on: test.depends_on })
  }
}
for (const id of Object.keys(results)) {
  if (!rows.some(r => r.id === id)) console.error(`warning: result for unknown test ${id}`)
}
if (classifiedFile) writeFileSync(classifiedFile, JSON.stringify(rows, null, 2) + '\n')

const count = cls => rows.filter(r => r.class === cls).length
console.log(`${rows.length} tests, ${Object.keys(results).length} run`)
for (const [, cls, label] of CLASSES) {
  console.log(`${String(count(cls)).padStart(5)}  ${cls.padEnd(16)} ${label}`)
}
const detail = r => Array.isArray(r.result) ? `${r.result[0]}: ${r.result[1]}` : String(r.result)
for (const cls of ['fail', 'optional_fail', 'setup_fail', 'retry', 'harness_fail', 'dependency_fail']) {
  const list = rows.filter(r => r.class === cls)
  if (!list.length) continue
  console.log(`\n== ${cls} (${list.length})`)
  for (const r of list) {
    console.log(`${r.id}  ${r.name}`)
    if (cls === 'dependency_fail') {
      const deps = r.depends_on.map(d => `${d} (${rows.find(x => x.id === d)?.class})`)
      console.log(`    depends on ${deps.join(', ')}; own result ${detail(r)}`)
    } else {
      console.log(`    ${detail(r)}`)
    }
  }
}

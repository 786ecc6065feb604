import { DashboardBuilder, DatasourceVariableBuilder, RowBuilder } from '@grafana/grafana-foundation-sdk/dashboard';
import { DataqueryBuilder } from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as StatPanel } from '@grafana/grafana-foundation-sdk/stat';
import { PanelBuilder as TimeseriesPanel } from '@grafana/grafana-foundation-sdk/timeseries';

/**
 * The two dashboards, as code (grafana-foundation-sdk). `npm run dashboards` writes them to
 * observability/grafana/*.json (committed; `generated:check` fails when they are stale); import
 * those into Grafana (or Dash0) with a Prometheus data source. Every query names metrics the
 * processes export (test/integration/telemetry-catalog.test.ts checks that).
 */

// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

const query = (expr: string, legend?: string) => {
  const q = new DataqueryBuilder().expr(expr).datasource(DATASOURCE);
  return legend ? q.legendFormat(legend) : q;
};

function timeseries(title: string, unit: string, ...targets: DataqueryBuilder[]) {
  const panel = new TimeseriesPanel().title(title).unit(unit).datasource(DATASOURCE).span(12).height(8);
  for (const t of targets) panel.withTarget(t);
  return panel;
}

function stat(title: string, unit: string, expr: string) {
  return new StatPanel().title(title).unit(unit).datasource(DATASOURCE).span(6).height(4).withTarget(query(expr));
}

function dashboard(uid: string, title: string) {
  return new DashboardBuilder(title)
    .uid(uid)
    .tags(['lora-vault', 'generated'])
    .refresh('1m')
    .time({ from: 'now-24h', to: 'now' })
    .timezone('browser')
    .withVariable(new DatasourceVariableBuilder('datasource').label('Data source').type('prometheus'));
}

/** The GPU fleet: hit rate, downloads, evictions, cache and disk per machine. */
export function fleetDashboard() {
  return dashboard('lora-vault-fleet', 'LoRA cache fleet')
    .withRow(new RowBuilder('Fleet'))
    .withPanel(
      stat(
        'Hit rate (24 h)',
        'percentunit',
        'sum(increase(lora_cache_lookups_total{result="hit"}[24h])) / sum(increase(lora_cache_lookups_total[24h]))',
      ),
    )
    .withPanel(stat('Downloads (24 h)', 'short', 'sum(increase(lora_cache_download_duration_count[24h]))'))
    .withPanel(stat('Download failures (24 h)', 'short', 'sum(increase(lora_cache_download_failures_total[24h]))'))
    .withPanel(stat('Evictions (24 h)', 'short', 'sum(increase(lora_cache_evictions_total[24h]))'))
    .withRow(new RowBuilder('Per machine'))
    .withPanel(
      timeseries(
        'Hit rate by machine (1 h)',
        'percentunit',
        query(
          'sum by (instance) (increase(lora_cache_lookups_total{result="hit"}[1h])) / sum by (instance) (increase(lora_cache_lookups_total[1h]))',
          '{{instance}}',
        ),
      ),
    )
    .withPanel(
      timeseries(
        'Download duration p50 / p95 by size',
        's',
        query(
          'histogram_quantile(0.5, sum by (le, lora_size_bucket) (rate(lora_cache_download_duration_bucket[$__rate_interval])))',
          'p50 {{lora_size_bucket}}',
        ),
        query(
          'histogram_quantile(0.95, sum by (le, lora_size_bucket) (rate(lora_cache_download_duration_bucket[$__rate_interval])))',
          'p95 {{lora_size_bucket}}',
        ),
      ),
    )
    .withPanel(
      timeseries(
        'Download throughput',
        'Bps',
        query('sum by (instance) (rate(lora_cache_download_bytes_total[$__rate_interval]))', '{{instance}}'),
      ),
    )
    .withPanel(
      timeseries(
        'Download failures and retries',
        'short',
        query('sum by (error_type) (increase(lora_cache_download_failures_total[$__rate_interval]))', 'failed: {{error_type}}'),
        query('sum by (kind) (increase(lora_cache_download_retries_total[$__rate_interval]))', 'retry: {{kind}}'),
      ),
    )
    .withPanel(
      timeseries(
        'Evictions by machine and reason',
        'short',
        query('sum by (instance, reason) (increase(lora_cache_evictions_total[1h]))', '{{instance}} {{reason}}'),
      ),
    )
    .withPanel(timeseries('Cache used / cap', 'percentunit', query('lora_cache_usage / lora_cache_limit', '{{instance}}')))
    .withPanel(
      timeseries(
        'Free disk and its floor',
        'bytes',
        query('lora_cache_disk_free', 'free {{instance}}'),
        query('lora_cache_disk_floor', 'floor {{instance}}'),
      ),
    )
    .withPanel(
      timeseries(
        'Leases and INDEX_BUSY waits',
        'short',
        query('lora_cache_leases', 'leases {{instance}}'),
        query('sum by (instance) (increase(lora_cache_index_busy_waits_total[$__rate_interval]))', 'busy waits {{instance}}'),
      ),
    );
}

/** The product: uploads, storage, quotas, the business figures, the API. */
export function productDashboard() {
  return dashboard('lora-vault-product', 'LoRA vault product')
    .withRow(new RowBuilder('Business'))
    .withPanel(stat('Users with LoRAs', 'short', 'max(lora_vault_users_with_loras)'))
    .withPanel(stat('LoRAs per user', 'short', 'max(lora_vault_loras_per_user)'))
    .withPanel(stat('Storage used', 'bytes', 'max(lora_vault_storage_used)'))
    .withPanel(stat('Average storage per user', 'bytes', 'max(lora_vault_storage_per_user)'))
    .withPanel(stat('Storage growth (24 h)', 'bytes', 'max(lora_vault_storage_growth)'))
    .withPanel(stat('Workflows using user LoRAs (30 d)', 'short', 'max(lora_vault_workflows_using_user_loras)'))
    .withPanel(stat('LoRAs', 'short', 'max(lora_vault_loras)'))
    .withPanel(
      stat(
        'Upload success (24 h)',
        'percentunit',
        'sum(increase(lora_vault_uploads_total{outcome="success"}[24h])) / sum(increase(lora_vault_uploads_total[24h]))',
      ),
    )
    .withRow(new RowBuilder('Uploads and storage'))
    .withPanel(
      timeseries(
        'Uploads by outcome and code',
        'short',
        query('sum by (outcome, error_code) (increase(lora_vault_uploads_total[$__rate_interval]))', '{{outcome}} {{error_code}}'),
      ),
    )
    .withPanel(
      timeseries(
        'Upload duration p50 / p95',
        's',
        query('histogram_quantile(0.5, sum by (le) (rate(lora_vault_upload_duration_bucket[$__rate_interval])))', 'p50'),
        query('histogram_quantile(0.95, sum by (le) (rate(lora_vault_upload_duration_bucket[$__rate_interval])))', 'p95'),
      ),
    )
    .withPanel(
      timeseries(
        'Upload sizes (p50) and bytes stored',
        'bytes',
        query(
          'histogram_quantile(0.5, sum by (le, lora_format) (rate(lora_vault_upload_size_bucket[$__rate_interval])))',
          'p50 {{lora_format}}',
        ),
        query('sum(increase(lora_vault_upload_bytes_total[$__rate_interval]))', 'bytes stored'),
      ),
    )
    .withPanel(
      timeseries(
        'Quotas',
        'short',
        query('sum(increase(lora_vault_quota_refusals_total[$__rate_interval]))', 'refusals'),
        query('sum(increase(lora_vault_quota_warnings_total[$__rate_interval]))', 'warnings issued'),
      ),
    )
    .withPanel(
      timeseries(
        'Blob deletions and the reconciler',
        'short',
        query('max(lora_vault_blob_deletions_pending)', 'pending'),
        query('max(lora_vault_blob_deletions_failed)', 'exhausted'),
        query('sum by (outcome) (increase(lora_vault_blob_deletions_total[$__rate_interval]))', 'attempts {{outcome}}'),
        query('sum by (kind) (increase(lora_vault_reconciler_findings_total[$__rate_interval]))', 'reconciler: {{kind}}'),
      ),
    )
    .withRow(new RowBuilder('API'))
    .withPanel(
      timeseries(
        'Operation p99 by name',
        's',
        query(
          'histogram_quantile(0.99, sum by (le, graphql_operation_name) (rate(lora_vault_graphql_operation_duration_bucket[$__rate_interval])))',
          '{{graphql_operation_name}}',
        ),
      ),
    )
    .withPanel(
      timeseries(
        'Errors by code',
        'short',
        query('sum by (error_code) (increase(lora_vault_graphql_errors_total[$__rate_interval]))', '{{error_code}}'),
        query(
          'sum by (http_response_status_code) (increase(http_server_request_duration_count{http_response_status_code=~"5.."}[$__rate_interval]))',
          'HTTP {{http_response_status_code}}',
        ),
      ),
    )
    .withPanel(
      timeseries(
        'WebSockets, subscriptions, events',
        'short',
        query('sum(lora_vault_websocket_connections)', 'open WebSockets'),
        query('sum by (graphql_field) (lora_vault_subscriptions_active)', 'subscriptions {{graphql_field}}'),
        query(
          'sum by (messaging_destination_name) (rate(lora_vault_events_published_total[$__rate_interval]))',
          'published/s {{messaging_destination_name}}',
        ),
        query('sum by (graphql_field) (rate(lora_vault_events_delivered_total[$__rate_interval]))', 'delivered/s {{graphql_field}}'),
      ),
    )
    .withPanel(
      timeseries(
        'Job queues and database pools',
        'short',
        query('max by (messaging_destination_name) (lora_vault_jobs_queue_depth)', 'queue {{messaging_destination_name}}'),
        query('sum by (db_client_connection_state) (db_client_connection_count)', 'connections {{db_client_connection_state}}'),
        query('sum(db_client_connection_max)', 'pool max'),
      ),
    );
}

/** File name → dashboard JSON. */
export function dashboards(): Record<string, unknown> {
  return { 'fleet.json': fleetDashboard().build(), 'product.json': productDashboard().build() };
}

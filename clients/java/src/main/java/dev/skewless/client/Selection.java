package dev.skewless.client;

import dev.skewless.v1.FeatureList;
import dev.skewless.v1.GetOnlineFeaturesRequest;
import dev.skewless.v1.HistoricalQuery;
import dev.skewless.v1.RepeatedValue;
import java.util.List;

/**
 * Which features a request returns: a feature service or explicit references.
 *
 * <pre>{@code
 * Selection.featureService("driver_ranking")
 * Selection.features("driver_stats:conv_rate", "customer_profile").withFullFeatureNames()
 * }</pre>
 */
public final class Selection {
  private final String featureService;
  private final List<String> features;
  private final boolean fullFeatureNames;

  private Selection(String featureService, List<String> features, boolean fullFeatureNames) {
    this.featureService = featureService;
    this.features = features;
    this.fullFeatureNames = fullFeatureNames;
  }

  /** The features of a registered feature service. */
  public static Selection featureService(String name) {
    return new Selection(name, List.of(), false);
  }

  /** Features by reference: {@code view:feature}, or {@code view} for all of a view's. */
  public static Selection features(String... references) {
    return new Selection(null, List.of(references), false);
  }

  /** Names the results {@code view__feature} instead of {@code feature}. */
  public Selection withFullFeatureNames() {
    return new Selection(featureService, features, true);
  }

  /** Builds the generated request message for this selection and these entities. */
  public GetOnlineFeaturesRequest toRequest(EntityColumn... entities) {
    GetOnlineFeaturesRequest.Builder request =
        GetOnlineFeaturesRequest.newBuilder().setFullFeatureNames(fullFeatureNames);
    if (featureService != null) {
      request.setFeatureService(featureService);
    } else {
      request.setFeatures(FeatureList.newBuilder().addAllFeatures(features));
    }
    for (EntityColumn column : entities) {
      request.putEntities(
          column.name(), RepeatedValue.newBuilder().addAllValues(column.values()).build());
    }
    return request.build();
  }

  /** Starts the generated historical query message for this selection. */
  HistoricalQuery.Builder toHistoricalQuery() {
    HistoricalQuery.Builder query =
        HistoricalQuery.newBuilder().setFullFeatureNames(fullFeatureNames);
    if (featureService != null) {
      query.setFeatureService(featureService);
    } else {
      query.setFeatures(FeatureList.newBuilder().addAllFeatures(features));
    }
    return query;
  }
}

"""Requests exactly as the platforms document them, or as their SDKs were captured sending
them; each names its source. The tests send these bytes unchanged but for the event time
(`at(text, now)`: a documented timestamp is older than the pipeline's 7-day window)."""

from __future__ import annotations

from typing import Final

PINTEREST_SDK_BODY: Final = (
    # pinterest-api-sdk 0.2.7, Conversion.send_conversion_events(..., test=True): the
    # body as captured (json.dumps separators, nulls for unset optional strings).
    '{"data": [{"event_name": "checkout", "action_source": "web", "event_time": 17000'
    '00000, "event_id": "evt-1", "user_data": {"em": ["411e44ce1261728ffd2c0686e44e3f'
    'ffe413c0e2c5adc498bc7da883d476b9c8"], "client_ip_address": "203.0.113.7", "clien'
    't_user_agent": "Mozilla/5.0"}, "custom_data": {"currency": "USD", "value": "72.3'
    '9", "order_id": "o-1", "content_ids": ["sku-1"], "num_items": 1}, "event_source_'
    'url": "https://shop.example/checkout", "partner_name": null, "app_id": null, "ap'
    'p_name": null, "app_version": null, "device_brand": null, "device_carrier": null'
    ', "device_model": null, "device_type": null, "os_version": null, "language": nul'
    "l}]}"
)
PINTEREST_SDK_TIME: Final = 1700000000

PINTEREST_OPENAPI_EVENT: Final = (
    # pinterest/api-description v5/openapi.yaml (v5.23.0), ConversionEvents: one event
    # built from every field's documented `example` (user_data: em, hashed_maids, click_id).
    b'{"data": [{"event_name": "checkout", "action_source": "app_ios", '
    b'"event_time": 1451431341, "event_id": "eventId0001", '
    b'"event_source_url": "https://www.my-clothing-shop.org/", "opt_out": false, '
    b'"partner_name": "ss-partnername", '
    b'"user_data": {"em": ["411e44ce1261728ffd2c0686e44e3fffe413c0e2c5adc498bc7da883d476b9c8", '
    b'"09831ea51bd1b7b32a836683a00a9ccaf3d05f59499f42d9883412ed79289969"], '
    b'"hashed_maids": ["0192518eb84137ccfe82c8b6322d29631dae7e28ed9d0f6dd5f245d73a58c5f1", '
    b'"837b850ac46d62b2272a71de73c27801ff011ac1e36c5432620c8755cf90db46"], '
    b'"click_id": "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2'
    b'Q2dOVDBXWWhkWklrUGxBUSZ0PUFBQUFBR1BaY3Bv"}, '
    b'"custom_data": {"currency": "USD", "value": "72.39", '
    b'"content_ids": ["product-id-001", "product-id-002"], '
    b'"content_name": "pinterest-themed-clothing", "content_category": "shirts", '
    b'"content_brand": "pinterest-brand", "contents": [{"id": "product-id-001", '
    b'"item_price": "14.99", "quantity": 3, "item_name": "pinterest-shirt-girl", '
    b'"item_category": "pinterest-clothing-shirts", "item_brand": "pinterest"}], '
    b'"num_items": 5, "order_id": "my_order_id", "search_string": "sample string", '
    b'"opt_out_type": "LDP", "np": "ss-company"}, '
    b'"app_id": "429047995", "app_name": "Pinterest", "app_version": "7.9", '
    b'"device_brand": "Apple", "device_carrier": "T-Mobile", "device_model": "iPhone X", '
    b'"device_type": "iPhone", "os_version": "12.1.4", "wifi": false, "language": "en"}]}'
)
PINTEREST_OPENAPI_TIME: Final = 1451431341

PINTEREST_LDP_IMAGE_TAG: Final = (
    # developers.pinterest.com/docs/track-conversions/use-limited-data-processing-flag/,
    # "Pinterest Tag - Image Tag" (the src attribute, its line breaks removed).
    "/v3/?tid=YOUR_TAG_ID&event=checkout"
    "&pd[opt_out_type]=LDP"
    "&pd[st]=4b650e5c4785025dee7bd65e3c5c527356717d7a1c0bfef5b4ada8ca1e9cbe17"
    "&pd[country]=9b202ecbc6d45c6d8901d989a918878397a3eb9d00e8f48022fc051b19d21a1d"
    "&ed[value]=10.00"
    "&ed[order_quantity]=2"
    "&ed[currency]=USD"
    "&ed[event_id]=YOUR_EVENT_ID"
    "&noscript=1"
)
PINTEREST_BASE_NOSCRIPT: Final = (
    # Pinterest tag base code, <noscript> image.
    "/v3/?event=init&tid=YOUR_TAG_ID&pd[em]=<hashed_email_address>&noscript=1"
)

META_USING_THE_API_CURL_DATA: Final = (
    # Conversions API, "Using the API", Send Requests: curl -X POST -F 'data=[...]'
    # -F 'access_token=<ACCESS_TOKEN>' https://graph.facebook.com/v25.0/<PIXEL_ID>/events
    """[
       {
         "event_name": "Purchase",
         "event_time": 1762902353,
         "user_data": {
           "em": [
             "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"
           ],
           "ph": [
             "254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4",
             "6f4fcb9deaeadc8f9746ae76d97ce1239e98b404efe5da3ee0b7149740f89ad6"
           ],
           "client_ip_address": "123.123.123.123",
           "client_user_agent": "$CLIENT_USER_AGENT",
           "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
           "fbp": "fb.1.1558571054389.1098115397"
         },
         "custom_data": {
           "currency": "usd",
           "value": 123.45,
           "contents": [
             {
               "id": "product123",
               "quantity": 1,
               "delivery_category": "home_delivery"
             }
           ]
         },
         "event_source_url": "http://jaspers-market.com/product/123",
         "action_source": "website"
       }
     ]"""
)
META_USING_THE_API_CURL_TIME: Final = 1762902353

META_USING_THE_API_BODY: Final = (
    # Conversions API, "Using the API": "An example request body looks like this".
    """{
   "data": [
      {
         "event_name": "Purchase",
         "event_time": 1633552688,
         "event_id": "event.id.123",
         "event_source_url": "http:\\/\\/jaspers-market.com\\/product\\/123",
         "action_source": "website",
         "user_data": {
            "client_ip_address": "192.19.9.9",
            "client_user_agent": "test ua",
            "em": [
               "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"
            ],
            "ph": [
               "254aa248acb47dd654ca3ea53f48c2c26d641d23d7e2e93a1ec56258df7674c4",
               "6f4fcb9deaeadc8f9746ae76d97ce1239e98b404efe5da3ee0b7149740f89ad6"
            ],
            "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "fbp": "fb.1.1558571054389.1098115397"
         },
         "custom_data": {
            "value": 100.2,
            "currency": "USD",
            "content_ids": [
               "product.id.123"
            ],
            "content_type": "product"
         },
         "opt_out": false
      },
      {
         "event_name": "Purchase",
         "event_time": 1633552688,
         "user_data": {
            "client_ip_address": "192.88.9.9",
            "client_user_agent": "test ua2"
         },
         "custom_data": {
            "value": 50.5,
            "currency": "USD"
         },
         "opt_out": false
      }
   ]
}"""
)
META_USING_THE_API_TIME: Final = 1633552688

META_TEST_EVENTS_BODY: Final = (
    # Conversions API, "Using the API", Test Events Tool: "Here's an example of how the
    # request should be structured".
    '{   "data": [      {         "event_name": "ViewContent",         "event_time": '
    '1764975551,         "event_id": "event.id.123",         "event_source_url": '
    '"http:\\/\\/jaspers-market.com",         "user_data": {            "client_ip_address": '
    '"1.2.3.4",            "client_user_agent": "test user agent"         }      }   ],   '
    '"test_event_code": "TEST123"}'
)
META_TEST_EVENTS_TIME: Final = 1764975551

META_PIXEL_EVENTS_FORM: Final = (
    # Marketing API reference, Ads Pixel Events, Creating, Example (HTTP): the body of
    # POST /v25.0/<PIXEL_ID>/events.
    "data=%5B%7B%22event_name%22%3A%22PageView%22%2C%22event_time%22%3A1778607673%2C"
    "%22user_data%22%3A%7B%22fbc%22%3A%22fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz"
    "1234567890%22%2C%22fbp%22%3A%22fb.1.1558571054389.1098115397%22%2C%22em%22%3A%22"
    "309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd%22%7D%7D%5D"
)
META_PIXEL_EVENTS_TIME: Final = 1778607673

META_LDU_GEOLOCATION: Final = (
    # Conversions API, "Using the API", Data Processing Options: "To enable LDU and have
    # Meta perform geolocation" (placeholders <EVENT_TIME>, <EMAIL>, <CURRENCY>, <VALUE>).
    """{
    "data": [
        {
            "event_name": "Purchase",
            "event_time": <EVENT_TIME>,
            "user_data": {
                "em": "<EMAIL>",
                "client_ip_address": "256.256.256.256"
            },
            "custom_data": {
                "currency": "<CURRENCY>",
                "value": "<VALUE>"
            },
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 0,
            "data_processing_options_state": 0
        }
    ]
}"""
)
META_LDU_CALIFORNIA: Final = (
    # the same page: "To enable LDU and manually specify the location, e.g., for California".
    """{
    "data": [
        {
            "event_name": "Purchase",
            "event_time": <EVENT_TIME>,
            "user_data": {
                "em": "<EMAIL>"
            },
            "custom_data": {
                "currency": "<CURRENCY>",
                "value": "<VALUE>"
            },
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000
        }
    ]
}"""
)
META_NO_LDU: Final = (
    # the same page: "To explicitly not enable Limited Data Use (LDU), specify an empty array".
    """{
    "data": [
        {
            "event_name": "Purchase",
            "event_time": <EVENT_TIME>,
            "user_data": {
                "em": "<EMAIL>"
            },
            "custom_data": {
                "currency": "<CURRENCY>",
                "value": "<VALUE>"
            },
            "data_processing_options": []
        }
    ]
}"""
)

META_SDK_FORM: Final = (
    # facebook-business 26.0.3, EventRequest(..., test_event_code="TEST123").execute():
    # the form body as captured (data: a JSON array of one JSON-encoded event string).
    "test_event_code=TEST123&data=%5B%22%7B%5C%22event_name%5C%22%3A+%5C%22Purchase%5C%22%2C+%5C%22event_time%5C%22%3A+1700000000%2C+%5C%22event_source_url%5C%22%3A+%5C%22https%3A%2F%2Fshop.example.com%2Fcheckout%5C%22%2C+%5C%22event_id%5C%22%3A+%5C%22evt-1%5C%22%2C+%5C%22data_processing_options%5C%22%3A+%5B%5C%22LDU%5C%22%5D%2C+%5C%22data_processing_options_country%5C%22%3A+0%2C+%5C%22data_processing_options_state%5C%22%3A+0%2C+%5C%22user_data%5C%22%3A+%7B%5C%22em%5C%22%3A+%5B%5C%222481f36dfc515ca76451aaadf1399026942a01ee50c6d0a61988b43cef039bc2%5C%22%5D%2C+%5C%22ph%5C%22%3A+%5B%5C%22e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176%5C%22%5D%2C+%5C%22external_id%5C%22%3A+%5B%5C%22user-42%5C%22%5D%2C+%5C%22client_ip_address%5C%22%3A+%5C%22203.0.113.7%5C%22%2C+%5C%22client_user_agent%5C%22%3A+%5C%22Mozilla%2F5.0+Test%5C%22%2C+%5C%22fbc%5C%22%3A+%5C%22fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890%5C%22%2C+%5C%22fbp%5C%22%3A+%5C%22fb.1.1558571054389.1098115397%5C%22%7D%2C+%5C%22custom_data%5C%22%3A+%7B%5C%22value%5C%22%3A+123.45%2C+%5C%22currency%5C%22%3A+%5C%22usd%5C%22%7D%2C+%5C%22action_source%5C%22%3A+%5C%22website%5C%22%7D%22%5D"
)
META_SDK_TIME: Final = 1700000000

META_PIXEL_NOSCRIPT: Final = (
    # Meta pixel base code, <noscript> image.
    "/tr?id={pixel-id}&ev=PageView&noscript=1"
)
META_PIXEL_IMAGE_TAG: Final = (
    # Meta Pixel, advanced: "Pixels installed using an <img> tag also support parameters".
    "/tr?id={pixel-id}&ev=Purchase&cd[content_name]=ABC%20Leather%20Sandal"
    "&cd[content_category]=Shoes&cd[content_type]=product&cd[content_ids]=1234"
    "&cd[value]=0.50&cd[currency]=USD"
)
META_PIXEL_LDU_CALIFORNIA: Final = (
    # Data Processing Options, Meta Pixel, image tag: "for California".
    "/tr?id={pixel_id}&ev=Purchase&dpo=LDU&dpoco=1&dpost=1000"
)
META_PIXEL_LDU_GEOLOCATION: Final = (
    # the same table: "To enable LDU and have Meta perform geolocation" (spelled vdpo there).
    "/tr?id={pixel_id}&ev=Purchase&vdpo=LDU&dpoco=0&dpost=0"
)


def at(text: str, documented: int, now: int) -> str:
    """`text` with its documented event time replaced by `now`."""
    return text.replace(str(documented), str(now))
